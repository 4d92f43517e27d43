"""``python -m scheduler.dev.llm_stub [--port P] …``: serve the stand-in."""

from scheduler.dev.llm_stub.server import main

main()
