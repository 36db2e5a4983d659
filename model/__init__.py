"""The contract between the stages: the event the sensor produces and the alert the engine produces.

It lives apart from every stage so that each can import it without crossing into another: the sensor writes
events, the engine reads them and writes alerts, the server carries alerts and the SDK hands them to users.
Pure data, its JSON forms, the checks a publishable alert must pass (`alert_checks`) and the one escaping of
control characters every text output uses (`text`); it imports nothing outside the standard library. docs/events.md and
docs/alert-json.md describe the two forms.
"""
