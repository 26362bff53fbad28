DROP TRIGGER resources_keep_signed_in_person ON resources;
DROP FUNCTION resources_keep_signed_in_person();
