"""Search a space with Ray Tune + Optuna: locally, or as a Ray job on a cluster.

    python jobs/search.py search_spaces/tabular_f1_smoke.yaml --set budget.trials=4
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/search.py search_spaces/text_edit_distance.yaml --storage /shared/searches

Takes the arguments of ``surrogate-search search``. How the library reaches the cluster: this
script puts ``<repo>/platform`` (a plain folder, never a package: ``platform`` is a stdlib module)
on its own ``sys.path``, and ``run_search`` ships ``platform/surrogate_search`` to every worker
with the runtime env ``py_modules`` when it connects to a cluster, so nodes need no install of
this repo, only its dependencies (torch, ray[tune,train], optuna, ...).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from surrogate_search.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["search", *sys.argv[1:]]))
