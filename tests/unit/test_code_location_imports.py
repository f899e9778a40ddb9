"""Every run's worker loads the code location; what it needs only inside a step waits for the step."""

import json
import subprocess
import sys

# Each is imported on first use (nthlayer_pipelines.core.lazy) by the modules that need it.
DEFERRED = ("pandas", "numpy")


def test_loading_the_code_location_imports_no_table_library() -> None:
    probe = (
        "import json, sys; import nthlayer_pipelines.definitions as d; d.defs.get_repository_def(); "
        f"print(json.dumps([m for m in {DEFERRED!r} if m in sys.modules]))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == []


def test_a_deferred_module_loads_on_first_use_and_is_the_module_itself() -> None:
    probe = (
        "import sys; from nthlayer_pipelines.core.lazy import lazy_import; "
        "pd = lazy_import('pandas'); assert 'pandas' not in sys.modules; "
        "frame = pd.DataFrame({'a': [1]}); import pandas; "
        "assert isinstance(frame, pandas.DataFrame) and pd.DataFrame is pandas.DataFrame; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "ok"
