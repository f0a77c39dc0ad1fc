import time
from bnviz.bench import measure_config_compiled
from bnviz.explorer.compare import Config
if __name__ == "__main__":
    for c in [Config(), Config(layer="BatchNorm1d", shape=(2000, 1000), dtype="float64"), Config(mode="eval")]:
        t = time.time(); out = measure_config_compiled(c); print(c.shape, c.mode, f"{time.time()-t:.1f}s", {k: round(v, 3) for k, v in out.items()}, flush=True)
