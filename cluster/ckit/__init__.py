"""
ckit's layer: peers' states (L{states}, L{messages}, L{lamport}), the
node that carries them over memberlist (L{node}) and its metrics
(L{metrics}).
"""
