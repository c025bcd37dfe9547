"""What several test modules share (data builders, small modules, fixtures): test modules import from here,
never from each other (tests/test_import_rules.py checks it); benchmarks import nothing of tests/."""
