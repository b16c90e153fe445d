-- The node witnesses the gateway's audit log: the newest checkpoint it accepted,
-- and whether it saw the log rewritten (then it stops exchanging until an
-- operator has investigated).
CREATE TABLE witness (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    size INTEGER NOT NULL,
    note TEXT NOT NULL,
    alarm INTEGER NOT NULL CHECK (alarm IN (0, 1))
) STRICT;
