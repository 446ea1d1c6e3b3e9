"""The lab's own tests use the lab fixtures."""
from tests.lab.fixtures import *  # noqa: F401,F403
