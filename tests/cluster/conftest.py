from tests.lab.fixtures import *  # noqa: F401,F403
