"""Repository-wide pytest hooks."""


def pytest_sessionfinish(session, exitstatus):
    # A run that collected no test proves nothing: make it a failure instead of pytest's exit 5.
    if session.testscollected == 0:
        session.exitstatus = 1
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("error: no tests were collected", red=True)
