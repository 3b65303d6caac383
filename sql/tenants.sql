-- Tenants: which org a role acts for, and the checks every caller-facing function shares.
--
-- A role listed in aicost.tenants is confined to its org: its ledger rows are recorded for that
-- org (another org_id is refused), it sees and uses only that org's budgets, reservations, rate
-- limits and response-cache namespaces, and its views show only that org's rows. A role that is
-- not listed (the usual single-tenant application role, operators) acts for any org. The acting
-- role is the session's role after SET ROLE (Rust: GetOuterUserId()), so SECURITY DEFINER code
-- sees the caller, not the extension's owner.

CREATE TABLE aicost.tenants (
    role   regrole PRIMARY KEY,
    org_id text NOT NULL CHECK (org_id <> '' AND octet_length(org_id) <= 256)
);
COMMENT ON TABLE aicost.tenants IS 'Roles confined to one org (set with ai_tenant_set); roles not listed act for any org';
COMMENT ON COLUMN aicost.tenants.role IS 'A role (usually a login role of one tenant''s application)';
COMMENT ON COLUMN aicost.tenants.org_id IS 'The org it acts for: its ledger rows, budgets, reservations and cache namespaces';
SELECT pg_catalog.pg_extension_config_dump('aicost.tenants', '');

CREATE FUNCTION aicost._tenants_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM aicost._invalidate_tenants();
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION aicost._tenants_changed() IS 'Trigger: every backend re-reads the tenant map once the change commits';
CREATE TRIGGER tenants_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON aicost.tenants
    FOR EACH STATEMENT EXECUTE FUNCTION aicost._tenants_changed();
ALTER TABLE aicost.tenants ENABLE ALWAYS TRIGGER tenants_changed;

-- Length and emptiness of caller-given ids (scope ids, org/team/user/key ids, request ids).
CREATE FUNCTION aicost._check_id(p_what text, p_value text) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF p_value = '' OR octet_length(p_value) > 256 THEN
        RAISE EXCEPTION '% must be 1 to 256 bytes long, not %', p_what, octet_length(p_value)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
COMMENT ON FUNCTION aicost._check_id(text, text) IS 'Internal: ids given by callers are 1 to 256 bytes (22023 otherwise)';

-- Money given by callers: a finite, non-negative number (numeric also has NaN and Infinity).
CREATE FUNCTION aicost._check_money(p_what text, p_value numeric, p_positive boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF p_value IS NULL OR p_value = 'NaN' OR p_value >= 'Infinity' OR p_value < 0
       OR (p_positive AND p_value = 0) THEN
        RAISE EXCEPTION '% must be a finite % number of USD, not %', p_what,
              CASE WHEN p_positive THEN 'positive' ELSE 'non-negative' END, left(coalesce(p_value::text, 'NULL'), 64)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
COMMENT ON FUNCTION aicost._check_money(text, numeric, boolean) IS 'Internal: money given by callers is finite and non-negative (or positive), never NaN (22023 otherwise)';

CREATE FUNCTION ai_tenant_set(role regrole, org_id text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF ai_tenant_set.role IS NULL THEN
        RAISE EXCEPTION 'role must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM aicost._check_id('org_id', coalesce(ai_tenant_set.org_id, ''));
    INSERT INTO aicost.tenants AS t (role, org_id) VALUES (ai_tenant_set.role, ai_tenant_set.org_id)
    ON CONFLICT ON CONSTRAINT tenants_pkey DO UPDATE SET org_id = excluded.org_id;
END
$$;
COMMENT ON FUNCTION ai_tenant_set(regrole, text) IS 'Confines a role to one org: its usage rows, budgets, reservations, rate limits and cache namespaces are that org''s only';

CREATE FUNCTION ai_tenant_drop(role regrole) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    DELETE FROM aicost.tenants t WHERE t.role = ai_tenant_drop.role RETURNING true
$$;
COMMENT ON FUNCTION ai_tenant_drop(regrole) IS 'Removes a role''s org confinement (it then acts for any org); NULL if it had none';
