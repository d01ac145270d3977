"""The queue's data layer: the jobs store (jobs.py), API tokens (tokens.py), the operations
page's reads (ops.py) and the page cursor (cursor.py). SQL lives in ai_service/sql, the
connections and the mapping of database faults in ai_service/driver.py."""
