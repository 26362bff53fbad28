DROP TABLE patient_nhs_numbers;
