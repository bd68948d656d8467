"""Apps: the ``skinlesion`` command line (``cli``) and what it runs besides notebooks: batch prediction
(``predict``), deployment export with parity checks (``export``) and the local Gradio demo (``demo``). The
top stage: may import every other."""
