"""
Alloy's cluster service (L{service}) with its options (L{options}), peer
discovery (L{discovery}) and the interfaces components use
(L{interfaces}).
"""
