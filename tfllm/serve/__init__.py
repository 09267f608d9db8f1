"""An OpenAI-compatible HTTP server with a chat page, for a run directory or a SavedModel.

    python -m tfllm.serve runs/tiny-sft                  # http://127.0.0.1:8000
    python -m tfllm.serve saved_models/tiny-sft/1 --port 8080 --api-key KEY

Modules: `app` (routes, limits, API key), `protocol` (OpenAI request checks and reply
shapes), `worker` (the model thread and its batching), `engine` (a run directory:
batched, streamed decoding), `saved_model` (a SavedModel through its signatures),
`static/chat.html` (the page).
"""
