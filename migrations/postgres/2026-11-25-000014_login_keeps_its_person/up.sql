-- A login would outlive the person it signs in as: the database refuses to delete a Patient or
-- Practitioner someone signs in as (the account is closed first, on purpose). The store turns
-- this refusal into 409; it holds for every writer and every path, the command line included.
CREATE FUNCTION resources_keep_signed_in_person() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM accounts WHERE fhir_user = NEW.res_type || '/' || NEW.id) THEN
    RAISE EXCEPTION 'refused: someone signs in as this resource';
  END IF;
  RETURN NEW;
END;
$$;
CREATE TRIGGER resources_keep_signed_in_person BEFORE UPDATE OF deleted ON resources
  FOR EACH ROW WHEN (NEW.deleted = 1 AND OLD.deleted = 0 AND NEW.res_type IN ('Patient', 'Practitioner'))
  EXECUTE FUNCTION resources_keep_signed_in_person();
