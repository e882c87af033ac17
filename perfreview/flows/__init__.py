"""Use cases, one module each: measure (run and store), ab (two sides interleaved), review
(compare -> markdown, pictures, JSON), imports (a foreign trace -> a stored run), llama_bench,
report and pictures of one run, check. No argument parsing here: the CLI and the GPU scripts call
these functions."""
