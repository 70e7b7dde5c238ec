"""Errors a user can act on. Each message names the file or thing at fault and the fix."""

from __future__ import annotations


class AssftError(Exception):
    """Base of every error shown to a user (CLI: printed without traceback, exit code 1)."""


class DataError(AssftError):
    """A dataset, image or label file is unusable as given."""


class ModelError(AssftError):
    """A checkpoint or model card cannot be loaded or does not fit the task."""


class StateError(AssftError):
    """An action is not allowed in the project's current state (names the allowed next step)."""
