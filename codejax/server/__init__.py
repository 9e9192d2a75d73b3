"""The parts of `python -m codejax.serve` (codejax/serve.py, the HTTP handler and the command line):
`openai_api` (requests and responses) and `scheduler` (batching and streaming over the sampler)."""
