# An independent NumPy (float64) implementation of sentence-transformers' all-MiniLM-L6-v2:
# BERT encoder, mean pooling over the tokens, L2 normalisation, truncation at 256 tokens.
# It produced the known answers in tests/model_embed.rs. Re-run it with
#   python3 -m venv /tmp/ref && /tmp/ref/bin/pip install numpy safetensors tokenizers
#   /tmp/ref/bin/python tests/support/minilm_reference.py MODEL_DIR "sentence" ...
import json, math, sys, numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer
d = sys.argv[1]
cfg = json.load(open(f"{d}/config.json"))
W = load_file(f"{d}/model.safetensors")
W = {k.removeprefix("bert."): v.astype(np.float64) for k, v in W.items()}
tok = Tokenizer.from_file(f"{d}/tokenizer.json")
tok.no_padding(); tok.enable_truncation(256)
erf = np.vectorize(math.erf)
def ln(x, p): 
    m = x.mean(-1, keepdims=True); v = ((x-m)**2).mean(-1, keepdims=True)
    return (x-m)/np.sqrt(v+cfg["layer_norm_eps"])*W[p+".weight"]+W[p+".bias"]
def lin(x, p): return x @ W[p+".weight"].T + W[p+".bias"]
def embed(text):
    ids = np.array(tok.encode(text).ids); n = len(ids)
    x = W["embeddings.word_embeddings.weight"][ids] + W["embeddings.position_embeddings.weight"][:n] + W["embeddings.token_type_embeddings.weight"][0]
    x = ln(x, "embeddings.LayerNorm")
    H = cfg["num_attention_heads"]; dh = cfg["hidden_size"]//H
    for l in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{l}."
        q = lin(x, p+"attention.self.query").reshape(n,H,dh).transpose(1,0,2)
        k = lin(x, p+"attention.self.key").reshape(n,H,dh).transpose(1,0,2)
        v = lin(x, p+"attention.self.value").reshape(n,H,dh).transpose(1,0,2)
        s = q @ k.transpose(0,2,1) / math.sqrt(dh)
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1,0,2).reshape(n, H*dh)
        x = ln(lin(a, p+"attention.output.dense") + x, p+"attention.output.LayerNorm")
        h = lin(x, p+"intermediate.dense"); h = 0.5*h*(1+erf(h/math.sqrt(2)))
        x = ln(lin(h, p+"output.dense") + x, p+"output.LayerNorm")
    e = x.mean(0); return e/np.linalg.norm(e)
for t in sys.argv[2:]:
    e = embed(t)
    print(json.dumps({"text": t, "first8": [round(float(v), 6) for v in e[:8]], "sum": round(float(e.sum()),6)}))
