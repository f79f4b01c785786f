-- Schema version 2: a Web Push endpoint per device (no keys: notifications carry no content).
CREATE TABLE push_endpoints (
    device_id BIGINT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE, endpoint TEXT NOT NULL);
