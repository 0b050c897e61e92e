"""Paper 2: what a low-precision network costs (ACE, ACEv2, 45 nm energy) and PikeLPN's techniques.

``ace`` counts every operation of a module with its bit widths, ``cost_models`` prices them,
``pikelpn_layers`` and ``pikelpn`` build the PikeLPN-style MobileNet; ``plots`` and ``widgets``.
"""
