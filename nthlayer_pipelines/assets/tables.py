"""`Table`: how asset and check functions annotate the pandas tables they take and make.

Dagster reads these functions' annotations when the code location loads, which every run does, the apply's
too, which reads no table. Naming `pandas.DataFrame` there would import pandas in each of those runs;
`Table` is `pandas.DataFrame` to a type checker and, to Dagster, the same "DataFrame" type it showed
before, checked when a step hands one over, by which time pandas is loaded.
"""

import sys
from typing import TYPE_CHECKING, Any

import dagster as dg

if TYPE_CHECKING:
    from pandas import DataFrame as Table
else:

    class Table:
        """Stands in for `pandas.DataFrame` in annotations Dagster reads at load."""


def _is_data_frame(_context: Any, value: object) -> bool:
    pandas = sys.modules.get("pandas")  # not loaded yet: nothing can be a DataFrame
    return pandas is not None and isinstance(value, pandas.DataFrame)


TABLE = dg.DagsterType(name="DataFrame", type_check_fn=_is_data_frame, description="a pandas DataFrame")
dg.make_python_type_usable_as_dagster_type(Table, TABLE)
