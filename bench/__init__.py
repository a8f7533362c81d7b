"""
Benchmarks of real processes and of the simulator, each a script run as
C{python bench/NAME.py} (see its docstring); C{bench._harness} holds what
they share.
"""
