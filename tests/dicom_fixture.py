"Write small, valid DICOM files for the reader and adapter tests (pydicom must be installed)."
import numpy as np


def write_dicom(path, a, sex='F', age='055Y', photometric='MONOCHROME2', slope=None, intercept=None, bits_stored=16):
    "A single-frame 16-bit grayscale DICOM of array `a`; sex/age None leaves the tag out."
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid, SecondaryCaptureImageStorage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset(); ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    if sex is not None: ds.PatientSex = sex
    if age is not None: ds.PatientAge = age
    ds.Rows, ds.Columns = a.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    if slope is not None or intercept is not None:
        ds.RescaleSlope, ds.RescaleIntercept = (1.0 if slope is None else slope), (0.0 if intercept is None else intercept)
    ds.PixelData = a.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
