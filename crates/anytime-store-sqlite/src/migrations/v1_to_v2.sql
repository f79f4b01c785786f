-- Schema version 2: devices linked to an existing account wait for approval by link code.
ALTER TABLE devices ADD COLUMN approved INTEGER NOT NULL DEFAULT 1;
ALTER TABLE devices ADD COLUMN link_code TEXT;
CREATE INDEX devices_pending ON devices(user_id, link_code) WHERE approved = 0;
