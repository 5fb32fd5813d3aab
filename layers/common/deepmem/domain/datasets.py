"""Where a dataset lives decides what can train it: `hub://` datasets are on Activeloop's
managed service (Deep Memory exists there only); every other path is a local or cloud folder."""

CLOUD_PREFIX = "hub://"


def is_cloud_dataset(dataset: str) -> bool:
    return dataset.startswith(CLOUD_PREFIX)
