-- One canonical form per address (services/gateway/emails.py: NFKC, case fold, NFKC). The gateway computes
-- it for every insert and look-up; the unique index on it replaces the one on lower(email), because
-- PostgreSQL's lower() and Python's case folding disagree on some characters, and an address that one
-- calls equal and the other does not could find an account while missing its log-in throttle.
-- `email` keeps the address as the student typed it: it is what we show and where we send.
ALTER TABLE app_user ADD COLUMN email_canonical text;

-- Existing rows. Before this migration the gateway accepted printable addresses of one shape; for ASCII
-- ones (ASU's, and nearly all) NFKC changes nothing and case folding is exactly lower(), so the value below
-- is the gateway's canonical form. For the others, lower(normalize(NFKC)) equals it except where case
-- folding differs from lowering: ß and ẞ (→ ss) and final sigma (→ σ) are translated here; what is left
-- (polytonic Greek iota subscripts, a few archaic Cyrillic letters, Cherokee) is not in any address we
-- have. A row left different would only fail to be found at log-in; it could never match another account.
CREATE FUNCTION app_user_email_canonical(email text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE
    WHEN email ~ '^[ -~]*$' THEN lower(email)
    ELSE replace(replace(lower(normalize(email, NFKC)), 'ß', 'ss'), 'ς', 'σ')
END;

UPDATE app_user SET email_canonical = app_user_email_canonical(email);

-- Two old accounts that are one address under case folding (`straße` and `strasse`) cannot both keep it:
-- the older one does, the newer gets a value no canonical address can equal (canonical addresses hold no
-- spaces), so it can no longer log in but loses nothing, and an operator can merge or delete it.
UPDATE app_user AS u
SET email_canonical = u.email_canonical || ' duplicate of ' || d.first_id
FROM (
    SELECT id, min(id) OVER (PARTITION BY email_canonical) AS first_id FROM app_user
) AS d
WHERE d.id = u.id AND d.id <> d.first_id;

ALTER TABLE app_user ALTER COLUMN email_canonical SET NOT NULL;
CREATE UNIQUE INDEX app_user_email_canonical_key ON app_user (email_canonical);
DROP INDEX app_user_email_key;

-- Rows written by anything but the gateway (tests, benchmarks, an operator's INSERT) get the same value the
-- backfill gives, instead of failing on NOT NULL; the gateway always writes its own.
CREATE FUNCTION app_user_fill_email_canonical() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.email_canonical := coalesce(NEW.email_canonical, app_user_email_canonical(NEW.email));
    RETURN NEW;
END
$$;
CREATE TRIGGER app_user_email_canonical BEFORE INSERT ON app_user
    FOR EACH ROW EXECUTE FUNCTION app_user_fill_email_canonical();
