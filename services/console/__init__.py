"""The console: a read API over the task registry and the archive, and the web pages that
show every task, its history and its notes."""
