"""The `synthetic` source: deterministic demo competitions shaped like Shopee (match) and Happywhale (identify).

Both generators write a competition's raw files into an empty folder, exactly as `kaggle competitions download`
would leave them after unzipping, plus a `solution.csv` holding the hidden test truth. The same seed always gives
byte-identical files.
"""

from compkit.data.sources.synthetic.identify import generate_identify
from compkit.data.sources.synthetic.match import generate_match

# Bump a task's version when its generator's output changes, so that `compkit fetch` regenerates data made by
# an older version (identify 3: train.csv names each photo's encounter).
GENERATOR_VERSIONS = {"match": 2, "identify": 3}

__all__ = ["GENERATOR_VERSIONS", "generate_identify", "generate_match"]
