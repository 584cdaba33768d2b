"""Exercises for notebooks 01-06: "predict, then run", each with a check and a worked solution.

Every exercise has three cells in its notebook: a prediction (``PREDICTION = None``), a check
that says right or wrong with a hint (never the answer), and a worked solution that computes the
answer with the course's own code and passes it to the same check, so the notebook tests run
every solution. The modules:

* :mod:`helpers.lessons.exercise` - the check itself;
* :mod:`helpers.lessons.vision` - notebooks 01, 02 and 04 (tiles, pixel shuffle, visual tokens);
* :mod:`helpers.lessons.serving` - notebook 03 (greedy decoding, KV cache, session length);
* :mod:`helpers.lessons.lora` - notebook 05 (LoRA parameter counts, iterations);
* :mod:`helpers.lessons.evaluation` - notebook 06 (multiple choice, confusions, forgetting).

Example:
    >>> from helpers.lessons.exercise import check
    >>> check(256, 256, hint="每个图块多少个 token?", quiet=True)
    True
"""
