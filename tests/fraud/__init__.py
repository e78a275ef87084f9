"""A test-only participant: a fraud check, added to the checkout as a new step.

It is written exactly as a real module would be (a contract, a table of its
own, idempotent handlers that leave a tombstone), and plugged in with no change
outside ``tests/``: see ``flow.py`` and the README's "How to add a step".
"""
