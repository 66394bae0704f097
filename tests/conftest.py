from _pytest.unittest import TestCaseFunction


def pytest_collection_modifyitems(items):
    """
    Trial TestCases run the reactor themselves, while pytest-twisted keeps it running in a
    greenlet from its first test on: run every TestCase before any pytest function.
    """
    items.sort(key=lambda item: not isinstance(item, TestCaseFunction))
