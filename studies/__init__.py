"""Research: measurements that informed a design choice, re-runnable on any fleet trace, and never
a dependency of the product, the backtests or local mode (.importlinter). Each module's
docstring says what it measures and how to run it (`python -m studies.<module> ...`)."""
