"""The course machinery: ``report`` (the checks and headline numbers each notebook registers) and
``reproduce`` (run every notebook headless and collect their verdicts into one table)."""
