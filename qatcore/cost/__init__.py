"""Paper 2: what a low-precision network costs (ACE, ACEv2, 45 nm energy) and PikeLPN's techniques.

``ace`` counts every operation of a module with its bit widths (PokeBNN's conventions: per image,
unquantised operands at 16 bits), ``foreign`` reads the bit widths of Brevitas and torchao layers,
``cost_models`` prices the counts, ``pikelpn_layers`` and ``pikelpn`` build the PikeLPN-style
MobileNet; ``plots`` and ``widgets``.
"""
