"""The `synthetic` source: deterministic demo competitions shaped like Shopee (match) and Happywhale (identify).

Both generators write a competition's raw files into an empty folder, exactly as `kaggle competitions download`
would leave them after unzipping, plus a `solution.csv` holding the hidden test truth. The same seed always gives
byte-identical files.
"""

from compkit.sources.synthetic_identify import generate_identify
from compkit.sources.synthetic_match import generate_match

__all__ = ["generate_identify", "generate_match"]
