"""Reference applications that run on an LDEV through a block device (issue 12 item 4).

They stand for the user's software: a SQLite bank (:mod:`.bank`, on the
LDEV layout of :mod:`.sqlite_ldev`) whose I/O is captured
(:mod:`.blockdev`) and replayed on the rack, and whose remote images the
application verdicts (``controllers.verify.apps``) judge. A leaf package:
it imports only ``controllers.formats`` (see the import-linter contracts).
"""
