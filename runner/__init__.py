"""The workload: a Llama-style decoder run token by token, in switchable configurations.

Flow: presets + config -> model weights -> device backend -> decode loop (instrumented) ->
event rows + run metadata, handed to perfreview.trace to store.
"""
