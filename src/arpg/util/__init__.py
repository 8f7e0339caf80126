"""General helpers at the bottom of the tree (they import nothing of arpg but its errors): file I/O,
devices and dtypes, images, torch.distributed set-up, dataclass-config helpers, the version."""
