"""Data sets: the bundled Animal-MNIST set, image folders, and extracted code shards."""
