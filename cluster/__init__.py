"""
A Twisted gossip cluster: memberlist-compatible membership
(L{cluster.gossip}), ckit-style peer states and sharding, and an
Alloy-style cluster service.
"""
