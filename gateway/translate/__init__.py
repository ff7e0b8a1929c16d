"""Pure translation between the gateway's canonical shape (OpenAI's chat completions) and the wire formats of the
translating front doors: no I/O, no gateway state. A door in gateway/http parses its body with these functions into
the pipeline's `InferenceRequest` and renders the pipeline's answer with their renderer."""
