-- What a payer is asked to pay (the wallet screen's list): open requests by payer, newest first.
CREATE INDEX wallet_requests_open_by_payer ON wallet_requests (payer, created_at_ms) WHERE status = 'open';
