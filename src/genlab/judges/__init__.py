"""Domain networks: the classifier and segmenter genlab trains on a task's real data to judge generated images."""
