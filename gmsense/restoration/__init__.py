"""Restoration of abandoned / legacy mine land (issue 19): the register's status per year.

:mod:`gmsense.restoration.status` is the science (pure numpy: masks, yearly ratios, statuses);
:mod:`gmsense.restoration.run` reads the imagery for every register polygon in the store and
writes its status rows. The accounting tables are in :mod:`gmsense.outputs.restoration_report`.
"""
