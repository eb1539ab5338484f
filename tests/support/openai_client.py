"""The official OpenAI Python client against `ghost model serve` over its Unix socket.

Usage: openai_client.py SOCKET GENERATE_MODEL EMBED_MODEL. Prints one JSON line of what it got;
the Rust test (tests/model_serve.rs) checks it. Any exception fails the test with its trace.
"""
import json
import sys

import httpx
import openai

sock, gen_model, emb_model = sys.argv[1:4]
client = openai.OpenAI(
    base_url="http://localhost/v1",
    api_key="not-needed",
    http_client=httpx.Client(transport=httpx.HTTPTransport(uds=sock), timeout=120),
    max_retries=0,
)
messages = [{"role": "user", "content": "Is nginx up?"}]

chat = client.chat.completions.create(model=gen_model, messages=messages, seed=4, temperature=0.9, max_tokens=16)
assert chat.choices[0].finish_reason in ("stop", "length"), chat
assert chat.usage.completion_tokens >= 1, chat.usage

pieces = []
for chunk in client.chat.completions.create(model=gen_model, messages=messages, seed=4, temperature=0.9, max_tokens=16, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)

tools = [{
    "type": "function",
    "function": {
        "name": "restart_service",
        "parameters": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 16}}, "required": ["name"]},
    },
}]
called = client.chat.completions.create(model=gen_model, messages=messages, tools=tools, tool_choice="required", seed=1, max_tokens=60)
call = called.choices[0].message.tool_calls[0]

emb = client.embeddings.create(model=emb_model, input=["the disk is full"])
models = [m.id for m in client.models.list()]

print(json.dumps({
    "chat": chat.choices[0].message.content,
    "stream": "".join(pieces),
    "tool": {"name": call.function.name, "arguments": json.loads(call.function.arguments)},
    "embedding_len": len(emb.data[0].embedding),
    "models": models,
}))
