-- How a persona's replies are spoken in a turn by voice: one of the reasoning service's voices
-- ('' is its default) and the speaking rate.
ALTER TABLE personas
    ADD COLUMN voice text NOT NULL DEFAULT '',
    ADD COLUMN voice_speed double precision NOT NULL DEFAULT 1.0
        CHECK (voice_speed >= 0.25 AND voice_speed <= 4.0);
