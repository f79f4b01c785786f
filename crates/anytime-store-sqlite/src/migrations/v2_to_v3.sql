-- Schema version 3: a Web Push endpoint per device (the browser's push service URL; no keys,
-- because notifications carry no content).
CREATE TABLE push_endpoints (device_id INTEGER PRIMARY KEY, endpoint TEXT NOT NULL);
