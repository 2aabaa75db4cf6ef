"""The watcher: follow git repositories and turn every new version tag into published packages."""
