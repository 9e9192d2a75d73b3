"""License classification, SPDX headers, the allow-list, and language detection."""
import os

import pytest

from codejax.codedata import collect, licenses
from codejax.codedata.language import detect_language, shebang_language

MIT = """MIT License

Copyright (c) 2024 Someone

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction..."""
APACHE = """                                 Apache License
                           Version 2.0, January 2004
                        http://www.apache.org/licenses/
   TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION"""
GPL3 = """                    GNU GENERAL PUBLIC LICENSE
                       Version 3, 29 June 2007
 Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>
 ... 13. Use with the GNU Affero General Public License. ..."""
LGPL21 = """                  GNU LESSER GENERAL PUBLIC LICENSE
                       Version 2.1, February 1999
 This license ... the GNU General Public License ..."""
BSD3 = """Redistribution and use in source and binary forms, with or without modification, are
permitted provided that ... Neither the name of the copyright holder nor the names of its
contributors may be used to endorse or promote products derived from this software"""
BSD2 = "Redistribution and use in source and binary forms, with or without modification, are permitted"


@pytest.mark.parametrize("text,expected", [
    (MIT, "MIT"), (APACHE, "Apache-2.0"), (GPL3, "GPL-3.0"), (LGPL21, "LGPL-2.1"), (BSD3, "BSD-3-Clause"),
    (BSD2, "BSD-2-Clause"), ("This is free and unencumbered software released into the public domain.", "Unlicense"),
    ("All rights reserved. Ask us first.", "unknown"),
])
def test_license_files_are_classified(text, expected):
    assert licenses.classify_license_text(text) == expected


def test_the_stdlib_license_is_psf_not_gpl():
    # Its history section talks about the GPL at length; PSF must still win.
    assert licenses.repo_license(collect.stdlib_root()) == ("PSF-2.0", "LICENSE.txt")


@pytest.mark.parametrize("text,expected", [
    ("# SPDX-License-Identifier: MIT\nx = 1\n", "MIT"),
    ("/* SPDX-License-Identifier: GPL-2.0-or-later */\nint x;\n", "GPL-2.0-or-later"),
    ('"""Doc."""\n# SPDX-License-Identifier: (MIT OR Apache-2.0)\n', "(MIT OR Apache-2.0)"),
    ("x = 1\n", None),
])
def test_spdx_headers(text, expected):
    assert licenses.spdx_header(text) == expected


def test_allow_list_understands_expressions_and_suffixes():
    allow = licenses.parse_allow_list("MIT, Apache-2.0, GPL-2.0")
    assert licenses.is_allowed("MIT", allow)
    assert licenses.is_allowed("mit", allow)
    assert licenses.is_allowed("GPL-3.0 OR MIT", allow)
    assert not licenses.is_allowed("GPL-3.0 AND MIT", allow)
    assert licenses.is_allowed("(Apache-2.0 WITH LLVM-exception)", allow)
    assert licenses.is_allowed("GPL-2.0-or-later", allow)
    assert not licenses.is_allowed("GPL-3.0-only", allow)
    default = licenses.parse_allow_list(",".join(licenses.DEFAULT_ALLOW))
    assert not licenses.is_allowed("GPL-3.0", default) and licenses.is_allowed("PSF-2.0", default)


def test_a_file_header_overrides_the_repository_license():
    assert licenses.file_license("# SPDX-License-Identifier: GPL-3.0-only\n", "MIT") == "GPL-3.0-only"
    assert licenses.file_license("x = 1\n", "MIT") == "MIT"


@pytest.mark.parametrize("path,text,expected", [
    ("a/b.py", "x = 1\n", "python"),
    ("tool", "#!/usr/bin/env python3.11\nprint(1)\n", "python"),
    ("run", "#!/bin/bash -e\necho hi\n", "shell"),
    ("tool.py", "#!/bin/sh\necho hi\n", "shell"),  # the shebang wins
    ("README", "Read me.\n", "unknown"),
    ("x.rs", "fn main() {}\n", "rust"),
])
def test_language_detection(path, text, expected):
    assert detect_language(path, text) == expected


def test_shebang_needs_to_be_on_the_first_line():
    assert shebang_language("\n#!/usr/bin/python\n") is None


def test_read_content_reasons(tmp_path):
    good = tmp_path / "good.py"
    good.write_text("\ufeffx = 1\n", encoding="utf-8")
    (tmp_path / "bin.py").write_bytes(b"x = 1\0\0\n")
    (tmp_path / "latin.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    (tmp_path / "big.py").write_text("x = 1\n" * 100)
    os.symlink(tmp_path / "missing.py", tmp_path / "dangling.py")
    (tmp_path / "dir.py").mkdir()
    os.mkfifo(tmp_path / "fifo.py")

    def reason(name):
        return collect.read_content({"abs": str(tmp_path / name)}, max_bytes=200)[1]

    assert collect.read_content({"abs": str(good)}, 200) == ("x = 1\n", None)  # BOM dropped
    assert reason("bin.py") == "binary"
    assert reason("latin.py") == "not_utf8"
    assert reason("big.py") == "too_large"
    assert reason("dangling.py") == "unreadable"
    assert reason("dir.py") == "not_a_regular_file"
    assert reason("fifo.py") == "not_a_regular_file"  # and it did not block
    assert collect.read_content({"content": "y" * 300}, 200) == (None, "too_large")
    assert collect.read_content({"content": "a\0b"}, 200) == (None, "binary")
