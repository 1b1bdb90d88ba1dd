-- SSF transmitter review: a status the hub's operator set on a stream (paused or disabled, with
-- `kakehashi ssf stream <id> pause|disable`) holds until an operator enables the stream again; the
-- receiver's POST /ssf/status is refused with 403 meanwhile (SSF 1.0 §8.1.2.2). Before, the receiver
-- could simply re-enable it. Statuses the hub sets by itself (inactivity_timeout) are not held.
ALTER TABLE ssf_streams ADD COLUMN operator_hold boolean NOT NULL DEFAULT false;
