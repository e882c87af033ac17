"""Other tools' formats, both ways: importers (Kineto/Chrome JSON, Nsight Systems SQLite, llama-bench
results) turn foreign files into the one event table; the Perfetto exporter writes it back out as
Chrome JSON. Producers beside the runner: they depend on perfreview.trace only."""
