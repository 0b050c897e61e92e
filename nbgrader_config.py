# nbgrader's settings for the course, read by `nbgrader generate_assignment` and `nbgrader autograde` when
# they run in a course directory holding this file (copy it to the course root; see CONTRIBUTING.md).
c = get_config()  # noqa: F821 - provided by nbgrader

# nbgrader's default limit is 30 s a cell; notebook 04 trains a 4-bit network in one cell (about a minute on
# two CPU cores), and the quick-parameter runs of 02 and 05 train too. Ten minutes a cell leaves room for slower
# machines and for an autograde of many submissions at once.
c.Execute.timeout = 600
